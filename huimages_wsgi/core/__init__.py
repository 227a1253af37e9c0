"""The leaves every layer builds on: configuration, errors, IDs, sizes, geometry, URLs,
signatures, HTML tags, the formats an extension names and the preview ladder.

Pure code: no backend, no cache, no WSGI, no pixels (Pillow is asked only which
encoders it has and how it spells a colour). Everything else imports from here,
and nothing here imports from anywhere else in the package.
"""
