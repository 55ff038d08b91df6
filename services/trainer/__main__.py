"""`python -m services.trainer`: run the trainer server."""
from services.trainer.app import main

main()
