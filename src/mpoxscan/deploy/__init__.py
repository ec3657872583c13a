"""From a trained checkpoint to what runs on a phone: ONNX export, fp16/int8 variants, their fidelity, screening."""
