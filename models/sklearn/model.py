"""Digits with a decision tree.

Loads the class-per-folder PNG dataset from DATA_DIR, flattens each image into a
feature vector, fits a classifier and prints its accuracy on a held-out split.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

data_dir = Path(os.environ.get("DATA_DIR", "data/digits"))
images, labels = [], []
for class_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
    for png in sorted(class_dir.glob("*.png")):
        images.append(np.asarray(Image.open(png).convert("L"), dtype=np.float32).ravel() / 255.0)
        labels.append(class_dir.name)
X, y = np.stack(images), np.array(labels)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

clf = DecisionTreeClassifier(max_depth=4, random_state=0)
clf.fit(X_train, y_train)

predictions = clf.predict(X_test)
print("accuracy:", accuracy_score(y_test, predictions))
