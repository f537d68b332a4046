// Swagger UI over the generated /openapi.json (served locally; see docs/web.md).
window.addEventListener("DOMContentLoaded", () => {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    docExpansion: "list",
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
