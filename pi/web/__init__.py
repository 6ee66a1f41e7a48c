"""The web panel (`lightshow web`): Starlette on uvicorn, imported only by that command."""
