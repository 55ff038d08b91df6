"""lambdascope: complexity audits of neural networks (the shared package: plumbing, SDK, CLI)."""

__version__ = "0.1.0"
