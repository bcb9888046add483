"""Serving: what the model accepts, the pyfunc, batch prediction over folders."""
