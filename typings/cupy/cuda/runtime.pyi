def getDeviceCount() -> int: ...  # noqa: N802 - CUDA's spelling
