"""The CNN baselines of Boucaud et al. (2019): blend2flux and blend2mask2flux (Keras 3).

``configs`` (named sizes), ``models`` (builders), ``data`` (HDF5 streaming, augmentation),
``train`` (training, checkpoints, resume) and ``predict`` (test predictions, submission).
"""
