"""The image: the container engine, the build context, wheels and the smoke check."""
