"""The bundled demo corpus (see SOURCES.md), shipped as package data: thresher.demo_data."""
