"""CT data: from files on disk to training tensors.

``io`` (volume files with their geometry), ``normalization`` (HU <-> [-1, 1]), ``phantoms``
(the built-in synthetic chest CT set), ``dicom`` (DICOM series to HU images), ``preprocess``
(canonical grid, manifest, resumable runs), ``lidc`` and ``rad_chestct`` (the two archives),
``dataset`` (volume lists, the split, ``VolumeDataset``), ``cli`` (the data commands).
"""
