"""Deployment: ONNX export of the two-stage model, an onnxruntime backend, and the HTTP interactor.

- :mod:`icmformer.deploy.onnx_export`: ``encoder.onnx`` + ``decoder.onnx`` + ``icmformer_onnx.json``
  (``icmformer export-onnx``).
- :mod:`icmformer.deploy.onnx_backend`: :class:`OnnxBackend`, the two model calls of the protocol
  core run by onnxruntime.
- :mod:`icmformer.deploy.rle`: Label Studio's brush RLE.
- :mod:`icmformer.deploy.service` / :mod:`icmformer.deploy.server`: annotation sessions with an
  encoding cache, and the FastAPI app (``icmformer serve``).

Nothing here is imported by the rest of the library; onnx, onnxruntime, fastapi and uvicorn are
imported only when these modules are used.
"""
