"""Export trained models for deployment: fp32 ONNX, INT8 ONNX (ONNX Runtime and TensorRT forms),
TensorRT engines. Every artifact is checked against its reference before it is kept."""
