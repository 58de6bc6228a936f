"""The model: the decoder's modules (`transformer`), μP in one place (`parametrization`), and torch-free
arithmetic of parameters, FLOPs and memory (`accounting`)."""
