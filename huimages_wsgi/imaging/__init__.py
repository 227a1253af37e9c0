"""Everything that touches pixels, on Pillow: which originals are accepted, checking
an upload and making its previews, rendering a variant, encoding it.

Imports only the leaves (``core``): the engine knows nothing of storage, the
cache or HTTP. ``ImageEngine`` is the one entry point the store uses.
"""
