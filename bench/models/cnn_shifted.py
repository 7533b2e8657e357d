"""A convnet for digits photographed off-centre and tilted (DATA_DIR/train, DATA_DIR/test)."""

import os

import keras
from keras import layers

data_dir = os.environ.get("DATA_DIR", "data/shifted")

train_ds = keras.utils.image_dataset_from_directory(
    os.path.join(data_dir, "train"), color_mode="grayscale", image_size=(28, 28), batch_size=32, seed=1)
test_ds = keras.utils.image_dataset_from_directory(
    os.path.join(data_dir, "test"), color_mode="grayscale", image_size=(28, 28), batch_size=32, shuffle=False)

model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    layers.Rescaling(1.0 / 255),
    layers.Conv2D(16, 3, activation="relu"),
    layers.MaxPooling2D(),
    layers.Conv2D(32, 3, activation="relu"),
    layers.MaxPooling2D(),
    layers.Flatten(),
    layers.Dense(64, activation="relu"),
    layers.Dense(10, activation="softmax"),
])

# plain SGD with a small step so it does not blow up
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0005),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train_ds, validation_data=test_ds, epochs=6)

loss, acc = model.evaluate(test_ds, verbose=0)
print("Test accuracy:", acc)
