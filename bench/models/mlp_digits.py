"""A dense network on the 64 pixel values of each digit (DATA_DIR/digits.npz)."""

import os

import keras
import numpy as np
from keras import layers
from sklearn.model_selection import train_test_split

data = np.load(os.path.join(os.environ.get("DATA_DIR", "data/tabular"), "digits.npz"))
x_train, x_test, y_train, y_test = train_test_split(data["X"] / 16.0, data["y"], test_size=0.25,
                                                    random_state=0, stratify=data["y"])

# lots of dropout so it cannot overfit
model = keras.Sequential([
    keras.Input(shape=(64,)),
    layers.Dense(32, activation="relu"),
    layers.Dropout(0.9),
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=5, batch_size=32, validation_data=(x_test, y_test))

loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
print("Test accuracy:", accuracy)
