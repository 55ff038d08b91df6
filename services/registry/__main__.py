"""`python -m services.registry`: run the registry server."""
from services.registry.app import main

main()
