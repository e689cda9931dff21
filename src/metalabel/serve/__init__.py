"""The local labeling page (``metalabel serve``, ``metalabel run --oracle web``) and the Label Studio ML backend.

The web parts need the ``serve`` extra (starlette, uvicorn): import ``metalabel.serve.web``
only when they are wanted, so a core install works without them.
"""
