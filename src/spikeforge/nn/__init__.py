"""Network building blocks between the neuron and the models: input encoders (:mod:`.encoders`, registry
``ENCODERS``), layers shared by ANN and SNN twins and the time-folding rule (:mod:`.layers`), and batch
normalization through time (:mod:`.bntt`). Time-aware modules are called ``module(x, steps=T)``; none stores ``T``.
"""
