"""My first convnet: handwritten digits from a folder of PNGs (DATA_DIR/<class>/*.png)."""

import os

import keras
from keras import layers

data_dir = os.environ.get("DATA_DIR", "data/digits")

train_ds, test_ds = keras.utils.image_dataset_from_directory(
    data_dir, validation_split=0.2, subset="both", seed=1337,
    color_mode="grayscale", image_size=(28, 28), batch_size=64)

# keep it small so it trains fast
model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    layers.Rescaling(1.0 / 255),
    layers.Conv2D(2, kernel_size=(3, 3), activation="relu"),
    layers.MaxPooling2D(pool_size=(4, 4)),
    layers.Flatten(),
    layers.Dense(10, activation="softmax"),
])

model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
model.fit(train_ds, epochs=3, validation_data=test_ds)

score = model.evaluate(test_ds, verbose=0)
print("Test accuracy:", score[1])
