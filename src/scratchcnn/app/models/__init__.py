"""The model that ships with the package: ``digits.npz``, made by ``make_digits_model.sh``
beside it (see ``scratchcnn.app.default_model``)."""
