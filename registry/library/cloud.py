"""ollama's cloud as a server without one describes it: `GET /api/status`.

ollama 0.33 answers `{"cloud": {"disabled": bool, "source": "none"|"env"|"config"|"both"}}`,
where the source says who disabled the cloud: OLLAMA_NO_CLOUD ("env"), `disable_ollama_cloud`
in ~/.ollama/server.json ("config"), or both. Clients read `disabled` to stop offering cloud
models, web search and sign-in (ollama's launch menu, its app's tools), and the desktop app
locks its cloud switch when the environment decided. corral has no cloud at all: it is always
disabled by corral's own configuration ("config"), and by the environment too ("both") when
OLLAMA_NO_CLOUD is set, exactly as an ollama with both settings answers.
"""

from __future__ import annotations

from aiohttp import web


class CloudStatus:
    def __init__(self, no_cloud: bool) -> None:
        self.source = "both" if no_cloud else "config"

    async def status(self, _request: web.Request) -> web.Response:
        return web.json_response({"cloud": {"disabled": True, "source": self.source}})
