"""Which wave is it (sine, square, triangle, sawtooth)? A GRU over noisy 40-step signals (DATA_DIR/waves.npz)."""

import os

import keras
import numpy as np
from keras import layers

data = np.load(os.path.join(os.environ.get("DATA_DIR", "data/waves"), "waves.npz"))
x_train, y_train = data["x_train"], data["y_train"]
x_test, y_test = data["x_test"], data["y_test"]

model = keras.Sequential([
    keras.Input(shape=(40, 1)),
    layers.GRU(32),
    layers.Dense(4, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.00002),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, epochs=5, batch_size=32, validation_data=(x_test, y_test))

score = model.evaluate(x_test, y_test, verbose=0)
print("Test accuracy:", score[1])
