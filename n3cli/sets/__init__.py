"""The N3 block on sets: correspondence classification (paper Sec. 5.5) on synthetic two-view data.

:mod:`.data` (generator), :mod:`.geometry` (weighted eight-point, pose, mAP), :mod:`.model`
(CNNNet, CNNNet+N3), :mod:`.train` (training, evaluation, ``execute``); the command ``n3 sets`` is
:mod:`n3cli.cli.sets`.
"""
