"""Wallaroo BYOP compatibility package (``mac.*``).

Wallaroo's "Bring Your Own Predict" models import their base classes from a
package named ``mac``. We ship our own implementation under the same import
paths so a model folder written for Wallaroo loads here without edits:

- ``mac.inference.Inference`` and ``mac.inference.creation.InferenceBuilder``
- ``mac.config.inference.CustomInferenceConfig``
- ``mac.types.InferenceData``
- ``mac.exceptions`` (``InferenceDataValidationError`` and friends)

Only the surface BYOP code touches is implemented; Wallaroo's serving
internals (Arrow Flight servers, pre/post-processors) are not.
"""
