"""A decision tree on the digits (DATA_DIR/digits.npz): grown until every leaf is pure."""

import os

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

data = np.load(os.path.join(os.environ.get("DATA_DIR", "data/tabular"), "digits.npz"))
X_train, X_test, y_train, y_test = train_test_split(data["X"], data["y"], test_size=0.25,
                                                    random_state=0, stratify=data["y"])

clf = DecisionTreeClassifier(random_state=0)
clf.fit(X_train, y_train)
print("Train accuracy:", accuracy_score(y_train, clf.predict(X_train)))
print("Test accuracy:", accuracy_score(y_test, clf.predict(X_test)))
