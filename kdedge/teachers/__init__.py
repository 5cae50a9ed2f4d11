"""Teachers trained elsewhere, read into kdedge: a state_dict of a registered architecture
(checkpoint.py), a torch.export program (exported.py) or an ONNX file run in ONNX Runtime
(onnx_model.py), and the input contract they are checked against before any work (contract.py).
Each loads into an nn.Module that returns logits, so calibration, KD, export and bench treat it like a
teacher kdedge trained."""
