{{/* Chart name. */}}
{{- define "prewarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or <release> when it contains the chart name. */}}
{{- define "prewarm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "prewarm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "ctx" $ "component" "scheduler"). */}}
{{- define "prewarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prewarm.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Standard labels on every object; call with (dict "ctx" $ "component" "scheduler"). */}}
{{- define "prewarm.labels" -}}
helm.sh/chart: {{ include "prewarm.chart" .ctx }}
{{ include "prewarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: prewarm
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "prewarm.scheduler.fullname" -}}
{{- printf "%s-scheduler" (include "prewarm.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prewarm.agent.fullname" -}}
{{- printf "%s-agent" (include "prewarm.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prewarm.scheduler.serviceAccountName" -}}
{{- if .Values.scheduler.serviceAccount.create -}}
{{- default (include "prewarm.scheduler.fullname" .) .Values.scheduler.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.scheduler.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "prewarm.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "prewarm.agent.fullname" .) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image: call with (dict "image" .Values.x.image "ctx" $). */}}
{{- define "prewarm.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* Secret holding the PostgreSQL conninfo, or "" when none. */}}
{{- define "prewarm.pgSecretName" -}}
{{- if .Values.scheduler.postgres.existingSecret -}}
{{- .Values.scheduler.postgres.existingSecret -}}
{{- else if .Values.scheduler.postgres.conninfo -}}
{{- printf "%s-postgres" (include "prewarm.scheduler.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "prewarm.tokensSecretName" -}}
{{- default (printf "%s-tokens" (include "prewarm.scheduler.fullname" .)) .Values.scheduler.apiTokens.existingSecret -}}
{{- end -}}

{{/* The agents' scheduler URL. */}}
{{- define "prewarm.schedulerURL" -}}
{{- if .Values.agent.schedulerURL -}}
{{- .Values.agent.schedulerURL -}}
{{- else -}}
{{- printf "%s://%s:%d" (ternary "tls+tcp" "tcp" .Values.tls.agents.enabled) (include "prewarm.schedulerHost" .) (int .Values.scheduler.service.agentsPort) -}}
{{- end -}}
{{- end -}}

{{/* The scheduler Service's DNS name inside the cluster. */}}
{{- define "prewarm.schedulerHost" -}}
{{- printf "%s.%s.svc" (include "prewarm.scheduler.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The name the agents expect in the scheduler's certificate (--tls-server-name), or "" to
leave it to the agent (the host of a user-set agent.schedulerURL). */}}
{{- define "prewarm.agentsTLSServerName" -}}
{{- if .Values.tls.agents.serverName -}}
{{- .Values.tls.agents.serverName -}}
{{- else if not .Values.agent.schedulerURL -}}
{{- include "prewarm.schedulerHost" . -}}
{{- end -}}
{{- end -}}

{{/* Secret with the CA of the agents' certificates (prewarmd --agents-tls-ca). */}}
{{- define "prewarm.agentsCASecretName" -}}
{{- default .Values.tls.agents.serverSecretName .Values.tls.agents.caSecretName -}}
{{- end -}}

{{/* Fails the render on TLS settings the schema cannot express. */}}
{{- define "prewarm.validateTLS" -}}
{{- $t := .Values.tls -}}
{{- if and $t.api.enabled (not $t.api.secretName) -}}
{{- fail "tls.api.enabled needs tls.api.secretName (a Secret with the certificate and key in one PEM file)" -}}
{{- end -}}
{{- if and $t.api.enabled (eq (int $t.api.containerPort) (int .Values.scheduler.httpPort)) -}}
{{- fail "tls.api.containerPort must differ from scheduler.httpPort" -}}
{{- end -}}
{{- if and $t.api.enabled (eq (int $t.api.containerPort) (int .Values.scheduler.agentsPort)) -}}
{{- fail "tls.api.containerPort must differ from scheduler.agentsPort" -}}
{{- end -}}
{{- if $t.agents.enabled -}}
{{- if not $t.agents.serverSecretName -}}
{{- fail "tls.agents.enabled needs tls.agents.serverSecretName (the scheduler's certificate and key)" -}}
{{- end -}}
{{- if and .Values.agent.enabled (eq (empty $t.agents.agentSecretName) (empty $t.agents.agentHostPath)) -}}
{{- fail "tls.agents.enabled needs exactly one of tls.agents.agentSecretName and tls.agents.agentHostPath (the agents' certificates)" -}}
{{- end -}}
{{- range $u := splitList "," .Values.agent.schedulerURL -}}
{{- if and $u (not (hasPrefix "tls+tcp://" (trim $u))) -}}
{{- fail (printf "tls.agents.enabled: agent.schedulerURL must use tls+tcp:// URLs, not %s" $u) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* True when the monitoring.coreos.com/v1 API is served. */}}
{{- define "prewarm.hasMonitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}
