"""Build data, train, export, evaluate and learn: the classifier's offline side.

These modules import torch, transformers, optimum, matplotlib and scikit-learn lazily (the
``train`` extra); the runtime in ``classifier_onnx`` never imports them.
"""
