"""Scale the pixels, then a support vector machine (DATA_DIR/digits.npz)."""

import os

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

data = np.load(os.path.join(os.environ.get("DATA_DIR", "data/tabular"), "digits.npz"))
X_train, X_test, y_train, y_test = train_test_split(data["X"], data["y"], test_size=0.25,
                                                    random_state=0, stratify=data["y"])

# a strong penalty keeps the margin wide
model = Pipeline([("scale", StandardScaler()), ("svc", SVC(C=0.002, gamma=0.5))])
model.fit(X_train, y_train)
print("Test accuracy:", model.score(X_test, y_test))
