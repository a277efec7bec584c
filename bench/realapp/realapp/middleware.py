"""One JSON line per request the app receives, appended to REALAPP_LOG (O_APPEND, so several
gunicorn workers can share the file)."""
import json
import os

LOG = os.environ.get("REALAPP_LOG")


class RequestLog:
    def __init__(self, get_response):
        self.get_response = get_response
        self.fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if LOG else None

    def __call__(self, request):
        response = self.get_response(request)
        if self.fd is not None:
            line = {
                "method": request.method,
                "path": request.get_full_path(),
                "cookies": sorted(request.COOKIES),
                "accept_encoding": request.META.get("HTTP_ACCEPT_ENCODING"),
                "status": response.status_code,
                "content_encoding": response.get("Content-Encoding"),
                "csrf_failure": getattr(request, "_realapp_csrf_failure", None),
            }
            os.write(self.fd, (json.dumps(line) + "\n").encode())
        return response
