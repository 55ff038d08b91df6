"""`python -m services.estimator`: run the estimator server."""
from services.estimator.app import main

main()
