from bench.protocol.load import load_protocol, LoadedProtocol
from bench.protocol.schema import Protocol

__all__ = ["load_protocol", "LoadedProtocol", "Protocol"]
