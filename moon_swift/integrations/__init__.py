"""Glue to the frameworks moon-swift plugs into. The core (core, data, modeling, detection, template, losses,
eval) imports none of it."""
