"""The Cloud Eye service, from the client's side: the HTTP client (report and query), signing and the credential
chain, the worker's one hot POST, and a total deadline per exchange. It knows nothing of logging: the handler and
the delivery package (``_delivery``) use it, never the other way round. The API as this project reads it is
docs/api.md.
"""
