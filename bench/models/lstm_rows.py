"""An LSTM that reads a digit image row by row (8 steps of 8 pixels), from DATA_DIR/digits.npz."""

import os

import keras
import numpy as np
from keras import layers
from sklearn.model_selection import train_test_split

data = np.load(os.path.join(os.environ.get("DATA_DIR", "data/tabular"), "digits.npz"))
X = data["X"].reshape(-1, 8, 8) / 16.0
y = data["y"]
x_train, x_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)

model = keras.Sequential([
    keras.Input(shape=(8, 8)),
    layers.LSTM(16),
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

# one pass to see that it works
model.fit(x_train, y_train, epochs=1, batch_size=32, validation_data=(x_test, y_test))

score = model.evaluate(x_test, y_test, verbose=0)
print("Test accuracy:", score[1])
