"""Linear (and non-linear) image-formation operators: resizing, blurring, masking, ...

Submodules are imported explicitly (``from irc.operators.resize import imresize``) so that
importing this package stays cheap.
"""
