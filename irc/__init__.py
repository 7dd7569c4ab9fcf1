"""irc: a command-line image-restoration toolkit.

The package is layered (see DESIGN.md): ``cli`` at the top, then the generic engines
(``evaluate``, ``bench``, ``train``), then ``methods``, then ``operators`` / ``nn`` / ``data``,
and the leaves (``io``, ``tiling``, ``metrics``, ``weights``, ``config``). Importing ``irc``
itself must stay cheap: no torch here.
"""

__version__ = "0.1.0"
