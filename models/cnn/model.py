"""
Title: Digits convnet
Description: A small convnet that classifies handwritten digits read from an image folder.

The dataset directory holds one sub-folder per class (0..9) of 28x28 grayscale PNGs.
Set DATA_DIR to point at it.
"""

"""
## Setup
"""

import os

import keras
from keras import layers

"""
## Prepare the data
"""

data_dir = os.environ.get("DATA_DIR", "data/digits")
image_size = (28, 28)
batch_size = 64

train_ds, val_ds = keras.utils.image_dataset_from_directory(
    data_dir,
    validation_split=0.2,
    subset="both",
    seed=1337,
    color_mode="grayscale",
    image_size=image_size,
    batch_size=batch_size,
)
num_classes = len(train_ds.class_names)

"""
## Build the model
"""

model = keras.Sequential(
    [
        keras.Input(shape=image_size + (1,)),
        layers.Rescaling(1.0 / 255),
        layers.Conv2D(4, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dense(num_classes, activation="softmax"),
    ]
)
model.summary()

"""
## Train the model
"""

epochs = 1

model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(train_ds, epochs=epochs, validation_data=val_ds)

"""
## Evaluate the trained model
"""

score = model.evaluate(val_ds, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])
