"""ms-swift integration: the only code that touches swift's registries.

Registration happens when :mod:`.plugin` is imported (``--external_plugins registry/moon.py``), or, after
``pip install``, through the start-up hook :mod:`.autoload` as swift imports each registry. This package's
own ``__init__`` stays empty: the start-up hook lives here and runs in every Python process.
"""
