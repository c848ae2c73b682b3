"""Layers shared by the models: the model interface, the causal Transformer, next-item losses,
item-feature inputs. Models live in msm4sr/ and baselines/ and build on these."""
