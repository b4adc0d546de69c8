"""Test support code: tiny models and generated pictures. Never imported by `photosearch`."""
