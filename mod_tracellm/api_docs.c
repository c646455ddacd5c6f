/*
 * api_docs.c - GET /openapi.json (the repository's docs/openapi.json,
 * embedded at build time and served byte for byte) and GET /docs (Swagger
 * UI, whose static files httpd serves from <mount>/docs/static/).
 */
#include <string.h>

#include <httpd.h>
#include <http_protocol.h>
#include <apr_strings.h>

#include "mod_tracellm.h"
#include "request.h"

extern const char tllm_openapi_json[];
extern const size_t tllm_openapi_json_len;

int tllm_api_openapi(tllm_req *q)
{
    return tllm_send_json(q->r, HTTP_OK, tllm_openapi_json,
                          tllm_openapi_json_len);
}

int tllm_api_docs(tllm_req *q)
{
    request_rec *r = q->r;
    const char *mount = ap_escape_html(r->pool, q->mount);
    const char *page = apr_pstrcat(r->pool,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n"
        "<meta charset=\"utf-8\">\n<title>TraceLLM API</title>\n"
        "<link rel=\"stylesheet\" href=\"", mount,
        "/docs/static/swagger-ui.css\">\n</head>\n<body>\n"
        "<div id=\"swagger-ui\"></div>\n"
        "<script src=\"", mount, "/docs/static/swagger-ui-bundle.js\">"
        "</script>\n<script>\n"
        "window.ui = SwaggerUIBundle({url: \"", mount, "/openapi.json\", "
        "dom_id: \"#swagger-ui\", deepLinking: true, validatorUrl: null});\n"
        "</script>\n</body>\n</html>\n", NULL);
    apr_size_t len = strlen(page);

    r->status = HTTP_OK;
    ap_set_content_type(r, "text/html; charset=utf-8");
    ap_set_content_length(r, len);
    if (!r->header_only) {
        ap_rwrite(page, len, r);
    }
    return OK;
}
