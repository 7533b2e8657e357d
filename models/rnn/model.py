"""
Title: Digits as sequences with an LSTM
Description: Reads each 28x28 digit image row by row (28 time steps of 28 pixels)
and classifies it with a recurrent network.

The dataset directory holds one sub-folder per class (0..9) of grayscale PNGs.
Set DATA_DIR to point at it.
"""

import os

import keras
from keras import layers

# Prepare the data: (batch, 28, 28, 1) images -> (batch, 28, 28) sequences
data_dir = os.environ.get("DATA_DIR", "data/digits")
train_ds, val_ds = keras.utils.image_dataset_from_directory(
    data_dir,
    validation_split=0.2,
    subset="both",
    seed=1337,
    color_mode="grayscale",
    image_size=(28, 28),
    batch_size=64,
)
to_sequence = lambda images, labels: (images[..., 0] / 255.0, labels)
train_ds = train_ds.map(to_sequence)
val_ds = val_ds.map(to_sequence)

# Build the model
model = keras.Sequential()
model.add(keras.Input(shape=(28, 28)))
model.add(layers.LSTM(16))
model.add(layers.Dense(10, activation="softmax"))
model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

# Train
model.fit(train_ds, epochs=3, validation_data=val_ds)

# Evaluate
loss, acc = model.evaluate(val_ds, verbose=0)
print(f"Validation accuracy: {acc:.4f}")
