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
{{- printf "tcp://%s.%s.svc:%d" (include "prewarm.scheduler.fullname" .) .Release.Namespace (int .Values.scheduler.service.agentsPort) -}}
{{- end -}}
{{- end -}}

{{/* True when the monitoring.coreos.com/v1 API is served. */}}
{{- define "prewarm.hasMonitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}
