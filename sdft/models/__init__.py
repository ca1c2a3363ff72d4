"""Model builders: tiny offline pipeline and SD 1.5 architecture."""
