"""One run over several processes (accelerate / torchrun; DDP, FSDP, DeepSpeed ZeRO) and studies on clusters
(Ray, Argo Workflows). The engines are the libraries' own; this package only configures and starts them."""
