"""Model repository pieces: the model card (card.yaml) and the demo-model trainer.

``gateway.models.train`` imports the training libraries (LightGBM, scikit-learn,
onnxmltools); import it only where training happens, never on the serving path.
"""
