"""Unsupervised STDP network (Diehl & Cook 2015) with pruning and quantization (Rathi, Panda & Roy 2019)."""
