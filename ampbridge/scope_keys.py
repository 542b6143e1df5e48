"""The names ampbridge stores in an ASGI scope, in one leaf module that every part may import."""

CLIENT_KEY = "ampbridge.client_key"  # the client key that authenticated the request (ClientKeyAuth)
PROVIDER_CALL = "ampbridge.provider_call"  # the ProviderCall an Amp provider path was mapped to
MODEL = "ampbridge.model"  # the model name a local call is served with (AmpFallback)
ACTOR_TOKEN_ONLY = "ampbridge.actor_token_only"  # admitted by its wsToken alone: no Amp key is added
