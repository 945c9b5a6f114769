"""Generation: sampling CT volumes from a model folder (``PRDiTPipeline``, ``prdit sample``)."""


def __getattr__(name: str):
    # Lazy, so the command line can import the light parts without torch.
    if name in ("PRDiTPipeline", "PRDiTPipelineOutput"):
        from prdit.generation import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'prdit.generation' has no attribute {name!r}")
