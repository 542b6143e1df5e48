"""ampbridge: run the Amp coding agent through your own model access.

Model calls for models you serve are answered locally; everything else goes to the Amp upstream.
The parts are pure-ASGI middlewares that can be stacked around any ASGI app.
"""

from .application import AmpApp, app
from .client_keys import ClientKeyAuth
from .cross_site import CrossSiteGate
from .fallback import AmpFallback
from .gzip_unwrap import GzipUnwrap
from .localhost import LocalhostOnly, is_loopback_peer
from .mapping import RouteDecision
from .models import BodyStreamingModels, LocalModels, WireFormat
from .provider_alias import ProviderAlias, ProviderCall
from .settings import ConfigError, ModelMapping, ProviderConfig, Settings, load_settings
from .speculation import Refuted
from .trusted_hosts import TrustedHosts
from .upstream import AmpUpstream

__all__ = [
    "AmpApp",
    "AmpFallback",
    "AmpUpstream",
    "BodyStreamingModels",
    "ClientKeyAuth",
    "ConfigError",
    "CrossSiteGate",
    "GzipUnwrap",
    "LocalModels",
    "LocalhostOnly",
    "ModelMapping",
    "ProviderAlias",
    "ProviderCall",
    "ProviderConfig",
    "Refuted",
    "RouteDecision",
    "Settings",
    "TrustedHosts",
    "WireFormat",
    "app",
    "is_loopback_peer",
    "load_settings",
]
__version__ = "0.1.0"
