"""Deployment: ONNX export, int8 quantisation, and ONNX Runtime scoring (which imports no torch)."""
