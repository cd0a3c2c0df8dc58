"""The rehearsal of the real chain (``make rehearse``): generated data and random-weight models.

:mod:`~neurocine.rehearsal.release` writes miniature raw datasets in the real releases' layouts,
:mod:`~neurocine.rehearsal.models` model directories with the real classes and layouts,
:mod:`~neurocine.rehearsal.run` runs ``neurocine pipeline`` over them. It proves wiring, not
quality.
"""
