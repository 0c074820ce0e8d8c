"""gmosred: reduction of Gemini GMOS imaging data.

Heavy libraries (astropy, scipy) are imported by the modules that need them,
so that importing the package and ``gmosred --help`` stay instant.
"""
__version__ = "0.1.0"
